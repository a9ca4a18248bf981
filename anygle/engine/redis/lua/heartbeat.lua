-- heartbeat: renew this instance's lease (if its epoch still stands), then suspect or reap every
-- registered instance whose lease is gone (anygle/engine/redis/liveness.py).
-- ARGV: instance, epoch, lease ttl ms, now ms (engine clock), reap budget (users), grace ms.
-- Returns {alive (1|0), users reaped, totalMatches, more (1: budget ran out, call again),
--          generation ('' when Redis has none: it lost its data), instances newly suspected}.
-- alive 0: this instance was reaped (fenced), or Redis lost its data: it must register again.
local me, epoch, ttl, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local budget, grace = tonumber(ARGV[5]), tonumber(ARGV[6])
local ok = 0
if epoch ~= '' and redis.call('HGET', EPOCHS, me) == epoch then
    redis.call('SET', ikeyinst(me), epoch, 'PX', ttl)
    ok = 1
end
-- suspicion is timed with Redis' clock: one clock for every reaper
local t = redis.call('TIME')
local clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reaped, more, suspected = 0, 0, 0
for _, n in ipairs(redis.call('SMEMBERS', INSTANCES)) do
    if redis.call('EXISTS', ikeyinst(n)) == 1 then
        redis.call('HDEL', SUSPECTS, n)
    else
        local since = tonumber(redis.call('HGET', SUSPECTS, n) or '-1')
        if since < 0 then
            redis.call('HSET', SUSPECTS, n, clock)
            suspected = suspected + 1
        elseif clock - since >= grace then
            if reaped < budget then
                local c, left = reap(n, now, budget - reaped)
                reaped = reaped + c
                if left then more = 1 end
            else
                more = 1
            end
        end
    end
end
return {ok, reaped, tonumber(redis.call('HGET', STATS, 'totalMatches') or '0'), more,
        redis.call('GET', GENERATION) or '', suspected}
