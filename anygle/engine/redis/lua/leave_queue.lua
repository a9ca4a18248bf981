-- leave_queue: ARGV user.  Returns 1 if the user was waiting.
local u = ARGV[1]
local e = dequeue(u)
if e == nil then return 0 end
local d = get_user(u)
if d ~= nil then
    d.state, d.prefs = 'idle', nil
    put_user(d)
end
return 1
