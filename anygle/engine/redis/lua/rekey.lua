-- rekey: the session's resume token changed (a resume on the same instance).
-- ARGV: user, this instance, new resume key
local u, runner, new_key = ARGV[1], ARGV[2], ARGV[3]
local d = get_user(u)
if d == nil or d.instance ~= runner then return 0 end
if d.resumeKey then redis.call('DEL', rskey(d.resumeKey)) end
d.resumeKey = new_key
put_user(d)
redis.call('SET', rskey(new_key), u, 'EX', USER_TTL)
return 1
