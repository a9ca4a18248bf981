-- leave_room: end the room of ARGV[1].
-- ARGV: user, instance, reason ('skipped'|'disconnected'), now ms, rematch cooldown ms
-- Returns msgpack {partner, partner instance, room id} or {} when the user was in no room.
local u, runner, reason, now, cooldown = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]),
    tonumber(ARGV[5])
local d = get_user(u)
local partner, pinst, room_id = end_room(u, d, reason, runner, now, cooldown)
if partner == nil then return cmsgpack.pack({}) end
put_user(d)
return cmsgpack.pack({partner, pinst, room_id})
