-- acquire_connection: ARGV ip, limit, instance.  conns:{ip} counts open connections from ip over
-- all instances; instance:{id}:conns (hash ip -> n) lets the reaper give back a dead instance's.
local ip, limit, inst = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local k = 'conns:' .. ip
if tonumber(redis.call('GET', k) or '0') >= limit then return 0 end
redis.call('INCR', k)
redis.call('HINCRBY', iconns(inst), ip, 1)
return 1
