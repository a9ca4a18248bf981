-- incr: counter ARGV[1] (key count:{name}) + 1, expiring ARGV[2] ms after its last increment.
local k = 'count:' .. ARGV[1]
local v = redis.call('INCR', k)
redis.call('PEXPIRE', k, ARGV[2])
return v
