-- touch: keep the TTLs of this instance's live users and active rooms.
-- ARGV: msgpack {users, rooms, now ms}
local data = cmsgpack.unpack(ARGV[1])
for _, x in ipairs(data[1]) do  -- {user, socket id, resume key}
    redis.call('EXPIRE', ukey(x[1]), USER_TTL)
    redis.call('EXPIRE', 'socket:' .. x[2], USER_TTL)
    if x[3] and x[3] ~= '' then redis.call('EXPIRE', rskey(x[3]), USER_TTL) end
end
for _, r in ipairs(data[2]) do
    local raw = redis.call('GET', 'room:' .. r)
    if raw then
        local room = cjson.decode(raw)
        room.lastActivity = data[3]
        redis.call('SET', 'room:' .. r, room_json(room), 'EX', ROOM_TTL)
    end
end
return 1
