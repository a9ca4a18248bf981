-- register: (re)announce this instance and its local state after a start or a resync.
-- ARGV: instance, ttl ms, now ms, msgpack {users, rooms, totalMatches, conns {ip: n}}
--   users: {{user, ip, socket id, room id|'', partner|''}...}  (same-instance rooms only)
--   rooms: {{room id, mode, initiator, responder}...}
local me, ttl, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local data = cmsgpack.unpack(ARGV[4])
redis.call('SET', ikeyinst(me), json({instance = me, registeredAt = now}), 'PX', ttl)
redis.call('SADD', INSTANCES, me)
redis.call('XADD', inbox(me), 'MAXLEN', '~', INBOX_MAXLEN, '*', 'b', cmsgpack.pack({}))
for _, x in ipairs(data[1]) do
    local d = {userId = x[1], instance = me, ip = x[2], socketId = x[3], state = 'idle',
               connectedAt = now}
    if x[4] ~= '' then
        d.state, d.roomId, d.partnerId, d.partnerInstance = 'chatting', x[4], x[5], me
    end
    put_user(d)
    redis.call('SET', 'socket:' .. x[3], x[1], 'EX', USER_TTL)
    if redis.call('SADD', iusers(me), x[1]) == 1 then redis.call('HINCRBY', STATS, 'online', 1) end
end
for _, r in ipairs(data[2]) do
    redis.call('SET', 'room:' .. r[1], json({roomId = r[1], mode = r[2], users = arr({r[3], r[4]}),
        initiator = r[3], responder = r[4], instances = {[r[3]] = me, [r[4]] = me},
        createdAt = now, lastActivity = now}), 'EX', ROOM_TTL)
    if redis.call('SADD', ROOMS, r[1]) == 1 then redis.call('HINCRBY', STATS, 'activeChats', 1) end
end
for ip, c in pairs(data[4] or {}) do
    redis.call('INCRBY', 'conns:' .. ip, c)
    redis.call('HINCRBY', iconns(me), ip, c)
end
local known = tonumber(data[3]) or 0
local total = tonumber(redis.call('HGET', STATS, 'totalMatches') or '0')
if known > total then redis.call('HSET', STATS, 'totalMatches', known) end
return 1
