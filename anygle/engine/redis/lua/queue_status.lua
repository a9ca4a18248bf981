-- queue_status: ARGV user ids.  Returns msgpack {{user, position, estimate ms}...} for waiting ones.
local out = {}
local est_cache = {}
local function estimate(q)
    local e = est_cache[q]
    if e == nil then
        local waits = redis.call('LRANGE', wkey(q), 0, -1)
        if #waits == 0 then waits = redis.call('LRANGE', WAITS, 0, -1) end
        e = 0
        if #waits > 0 then
            local sum = 0
            for _, w in ipairs(waits) do sum = sum + tonumber(w) end
            e = sum / #waits
        end
        est_cache[q] = e
    end
    return e
end
for _, u in ipairs(ARGV) do
    local e = get_entry(u)
    if e ~= nil then
        local rank = redis.call('ZRANK', qkey(e.q), u)
        if rank then out[#out + 1] = {u, rank + 1, estimate(e.q)} end
    end
end
return cmsgpack.pack(out)
