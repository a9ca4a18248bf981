-- touch: keep the TTLs of this instance's live users and active rooms.
-- ARGV: msgpack {users, rooms, now ms}
local data = cmsgpack.unpack(ARGV[1])
for _, u in ipairs(data[1]) do
    local raw = redis.call('GET', ukey(u))
    if raw then
        redis.call('EXPIRE', ukey(u), USER_TTL)
        local sid = cjson.decode(raw).socketId
        if sid then redis.call('EXPIRE', 'socket:' .. sid, USER_TTL) end
    end
end
for _, r in ipairs(data[2]) do
    local raw = redis.call('GET', 'room:' .. r)
    if raw then
        local room = cjson.decode(raw)
        room.lastActivity = data[3]
        room.users = arr(room.users)
        if room.sharedInterests then room.sharedInterests = arr(room.sharedInterests) end
        if room.interests then
            for k, v in pairs(room.interests) do room.interests[k] = arr(v) end
        end
        redis.call('SET', 'room:' .. r, json(room), 'EX', ROOM_TTL)
    end
end
return 1
