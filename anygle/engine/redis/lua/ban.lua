-- ban: ARGV kind ('users'|'ips'), value, reason, ttl ms (0: for good), instance.
-- A banned user connected to another instance is kicked through that instance's inbox.
local kind, value, reason, ttl, runner = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local k = 'banned:' .. kind .. ':' .. value
if ttl > 0 then redis.call('SET', k, reason, 'PX', ttl) else redis.call('SET', k, reason) end
if kind == 'users' then
    local d = get_user(value)
    if d ~= nil and d.instance ~= runner then notify(d.instance, {{'k', value, 'BANNED', reason}}) end
end
return 1
