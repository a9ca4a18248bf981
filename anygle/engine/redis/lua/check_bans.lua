-- check_bans: ARGV msgpack {{user, {ip name...}}...}: a user's names are its address, its abuse
-- key (an IPv6 /64) and the wider /56 and /48 (anygle.clientip.ban_keys).  Returns msgpack
-- {{user, reason}...} for the banned ones (by user id first, then by IP): one small reply
-- instead of a value per key.  Each name is looked up once per call.
local out = {}
local ip_reason = {}
for _, x in ipairs(cmsgpack.unpack(ARGV[1])) do
    local reason = redis.call('GET', 'banned:users:' .. x[1])
    if not reason then
        for _, name in ipairs(x[2]) do
            local r = ip_reason[name]
            if r == nil then
                r = redis.call('GET', 'banned:ips:' .. name) or false
                ip_reason[name] = r
            end
            if r then
                reason = r
                break
            end
        end
    end
    if reason then out[#out + 1] = {x[1], reason} end
end
return cmsgpack.pack(out)
