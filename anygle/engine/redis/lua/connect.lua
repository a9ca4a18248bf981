-- connect: user online on this instance.  ARGV: user, instance, ip, socket id, now ms,
-- resume key ('' for none: the SHA-256 of the session's resume token, see claim.lua)
local u, inst, ip, sid, now, rk = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local d = {userId = u, instance = inst, ip = ip, socketId = sid, state = 'idle', connectedAt = now}
if rk ~= '' then
    d.resumeKey = rk
    redis.call('SET', rskey(rk), u, 'EX', USER_TTL)
end
put_user(d)
redis.call('SET', 'socket:' .. sid, u, 'EX', USER_TTL)
if redis.call('SADD', iusers(inst), u) == 1 then redis.call('HINCRBY', STATS, 'online', 1) end
return 1
