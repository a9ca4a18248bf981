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
-- Position: place in the queue, in arrival order (the memory engine's).  The sorted set orders
-- users who joined in the same millisecond by name, so such ties are put in arrival order (seq).
local function position(u, e)
    local key = qkey(e.q)
    local score = redis.call('ZSCORE', key, u)
    if not score then return nil end
    local ties = redis.call('ZRANGEBYSCORE', key, score, score)
    if #ties == 1 then return redis.call('ZRANK', key, u) + 1 end
    local before = redis.call('ZCOUNT', key, '-inf', '(' .. score)
    for _, v in ipairs(ties) do
        local ve = get_entry(v)
        if v ~= u and ve ~= nil and ve.s < e.s then before = before + 1 end
    end
    return before + 1
end
for _, u in ipairs(ARGV) do
    local e = get_entry(u)
    if e ~= nil then
        local pos = position(u, e)
        if pos then out[#out + 1] = {u, pos, estimate(e.q)} end
    end
end
return cmsgpack.pack(out)
