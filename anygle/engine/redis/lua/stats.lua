-- stats: the global figures; online and activeChats are reconciled with the sets they count
-- (sum of instance:{id}:users over registered instances, the rooms set) so they cannot drift.
-- ARGV: queue names.  Returns msgpack {online, inQueue, activeChats, totalMatches, waits{}, queues{}}
local online = 0
for _, n in ipairs(redis.call('SMEMBERS', INSTANCES)) do
    online = online + redis.call('SCARD', iusers(n))
end
local chats = redis.call('SCARD', ROOMS)
local h = redis.call('HMGET', STATS, 'online', 'activeChats', 'totalMatches')
if tonumber(h[1]) ~= online then redis.call('HSET', STATS, 'online', online) end
if tonumber(h[2]) ~= chats then redis.call('HSET', STATS, 'activeChats', chats) end
local total = tonumber(h[3]) or 0
local waits = redis.call('LRANGE', WAITS, 0, -1)
for k = 1, #waits do waits[k] = tonumber(waits[k]) end
local queues = {}
for _, q in ipairs(ARGV) do
    local c = redis.call('ZCARD', qkey(q))
    if c > 0 then queues[q] = c end
end
return cmsgpack.pack({online, redis.call('HLEN', WAITING), chats, total, waits, queues})
