-- rate: GCRA (anygle.limits.gcra): ARGV key, limit, window ms, now ms.  Key rate:{key} holds the
-- theoretical arrival time (ms); denied calls change nothing.  Returns 1 (allowed) or 0.
local k = 'rate:' .. ARGV[1]
local limit, window, now = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local interval = window / limit
local tat = tonumber(redis.call('GET', k) or '0')
if tat < now then tat = now end
if tat - now > window - interval then return 0 end
tat = tat + interval
redis.call('SET', k, string.format('%.3f', tat), 'PX', math.max(1, math.ceil(tat - now)))
return 1
