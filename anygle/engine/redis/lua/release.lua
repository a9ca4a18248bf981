-- release_connection: ARGV abuse key, instance.
local ip, inst = ARGV[1], ARGV[2]
local c = redis.call('HINCRBY', iconns(inst), ip, -1)
if c <= 0 then redis.call('HDEL', iconns(inst), ip) end
if c >= 0 then
    if redis.call('DECR', 'conns:' .. ip) <= 0 then redis.call('DEL', 'conns:' .. ip) end
end
return 1
