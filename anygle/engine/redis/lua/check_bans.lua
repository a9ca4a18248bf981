-- check_bans: ARGV msgpack {{user, ip}...}.  Returns msgpack {{user, reason}...} for the banned
-- ones (by user id first, then by IP): one small reply instead of a value per key.
local out = {}
local ip_reason = {}
for _, x in ipairs(cmsgpack.unpack(ARGV[1])) do
    local reason = redis.call('GET', 'banned:users:' .. x[1])
    if not reason and x[2] ~= '' then
        local r = ip_reason[x[2]]
        if r == nil then
            r = redis.call('GET', 'banned:ips:' .. x[2]) or false
            ip_reason[x[2]] = r
        end
        reason = r
    end
    if reason then out[#out + 1] = {x[1], reason} end
end
return cmsgpack.pack(out)
