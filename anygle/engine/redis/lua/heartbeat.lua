-- heartbeat: refresh this instance's key, then reap registered instances whose key is gone.
-- ARGV: instance, ttl ms, now ms, reap budget (users).  Returns {alive (1|0), users reaped,
-- totalMatches, more (1 when the budget ran out: call again)}.  alive 0 means this instance was
-- reaped or Redis lost its data: it must register again (resync).
local me, ttl, now, budget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ok = redis.call('PEXPIRE', ikeyinst(me), ttl)
local reaped, more = 0, 0
for _, n in ipairs(redis.call('SMEMBERS', INSTANCES)) do
    if redis.call('EXISTS', ikeyinst(n)) == 0 then
        if reaped < budget then
            local c, left = reap(n, now, budget - reaped)
            reaped = reaped + c
            if left then more = 1 end
        else
            more = 1
        end
    end
end
return {ok, reaped, tonumber(redis.call('HGET', STATS, 'totalMatches') or '0'), more}
