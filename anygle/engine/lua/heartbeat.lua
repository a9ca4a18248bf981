-- heartbeat: refresh this instance's key, then reap every registered instance whose key is gone.
-- ARGV: instance, ttl ms, now ms.  Returns {alive (1|0), users reaped, totalMatches}; alive 0 means
-- this instance was reaped or Redis lost its data: it must register again (resync).
local me, ttl, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ok = redis.call('PEXPIRE', ikeyinst(me), ttl)
local reaped = 0
for _, n in ipairs(redis.call('SMEMBERS', INSTANCES)) do
    if redis.call('EXISTS', ikeyinst(n)) == 0 then reaped = reaped + reap(n, now) end
end
return {ok, reaped, tonumber(redis.call('HGET', STATS, 'totalMatches') or '0')}
