-- reap one instance now (clean stop, or before a resync): ARGV instance, now ms, limit (users).
-- Returns {users removed, more (1: call again)}.
local c, left = reap(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
return {c, left and 1 or 0}
