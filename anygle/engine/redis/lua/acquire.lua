-- acquire_connection: ARGV key, limit, instance.  conns:{key} counts open connections from an
-- abuse key (an IPv4 address, an IPv6 /64: anygle.clientip.abuse_key) over all instances;
-- instance:{id}:conns (hash key -> n) lets the reaper give back a dead instance's.
local ip, limit, inst = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local k = 'conns:' .. ip
if tonumber(redis.call('GET', k) or '0') >= limit then return 0 end
redis.call('INCR', k)
redis.call('HINCRBY', iconns(inst), ip, 1)
return 1
