-- connect: user online on this instance.  ARGV: user, instance, ip, socket id, now ms
local u, inst, ip, sid, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
put_user({userId = u, instance = inst, ip = ip, socketId = sid, state = 'idle',
          connectedAt = now})
redis.call('SET', 'socket:' .. sid, u, 'EX', USER_TTL)
if redis.call('SADD', iusers(inst), u) == 1 then redis.call('HINCRBY', STATS, 'online', 1) end
return 1
