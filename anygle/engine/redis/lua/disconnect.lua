-- disconnect: ARGV user, instance, now ms.
-- Returns msgpack {partner, partner instance, room id} or {} when the user was in no room.
local u, runner, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local d = get_user(u)
if d ~= nil and d.instance ~= runner then return cmsgpack.pack({}) end  -- resumed elsewhere
local partner, pinst, room_id = remove_user(u, runner, runner, now)
if partner == nil then return cmsgpack.pack({}) end
return cmsgpack.pack({partner, pinst, room_id})
