-- report: ARGV reporter key (distinct-reporter count), now ms, retention ms, ban reporters
-- (0: never), ban window ms, ban ttl ms (0: for good), instance, ban reason, then the
-- report:{id} hash fields as name/value pairs (reportId, reporter, reported, roomId, reason ...).
-- Returns msgpack {'dup', first report id} or {'ok', report id, banned 0|1}.
local key, now, retention = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local threshold, window, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local runner, ban_reason = ARGV[7], ARGV[8]
local f = {}
for i = 9, #ARGV, 2 do f[ARGV[i]] = ARGV[i + 1] end
local id, reported = f.reportId, f.reported

-- one report per reporter per room
local once = 'report:once:' .. f.roomId .. ':' .. f.reporter
local first = redis.call('GET', once)
if first then return cmsgpack.pack({'dup', first}) end
redis.call('SET', once, id, 'PX', retention)

local rk = 'report:' .. id
local fields = {unpack(ARGV, 9)}
local target = get_user(reported)
fields[#fields + 1] = 'reportedIp'
fields[#fields + 1] = target and target.ip or ''
redis.call('HSET', rk, unpack(fields))
redis.call('PEXPIRE', rk, retention)
redis.call('ZADD', 'reports', now, id)
redis.call('ZREMRANGEBYSCORE', 'reports', '-inf', now - retention)
redis.call('PEXPIRE', 'reports', retention)
redis.call('HINCRBY', 'stats:reports', 'received:' .. f.reason, 1)

-- distinct reporter keys within the window
local against = 'reports:against:' .. reported
redis.call('ZADD', against, now, key)
redis.call('ZREMRANGEBYSCORE', against, '-inf', now - window)
redis.call('PEXPIRE', against, window)
local banned = 0
if threshold > 0 and redis.call('ZCARD', against) >= threshold
        and redis.call('EXISTS', 'banned:users:' .. reported) == 0 then
    set_ban('users', reported, ban_reason, ttl, runner)
    redis.call('HINCRBY', 'stats:reports', 'blocks', 1)
    banned = 1
end
return cmsgpack.pack({'ok', id, banned})
