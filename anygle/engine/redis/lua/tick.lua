-- tick: open the users whose interest timeout ran out, retry the open and the cooled-down users
-- (MemoryEngine.tick, queue by queue).
-- ARGV: instance, now ms, interest timeout ms, room id prefix, match history, queue names...
-- Returns msgpack: array of matches (see make_match)
local runner, now, timeout, prefix, hist = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4],
    tonumber(ARGV[5])
local matches = {}
for k = 6, #ARGV do
    local q = ARGV[k]
    for _, u in ipairs(redis.call('ZRANGEBYSCORE', pkey(q), '-inf', now)) do
        redis.call('ZREM', pkey(q), u)
        local e = get_entry(u)
        if e ~= nil then redis.call('ZADD', okey(q), e.t, u) end
    end
    local open = redis.call('ZRANGE', okey(q), 0, -1)
    local due = redis.call('ZRANGEBYSCORE', rkey(q), '(0', now)
    if #open > 0 or #due > 0 then
        local seekers, in_open = {}, {}
        for _, u in ipairs(open) do
            in_open[u] = true
            local e = get_entry(u)
            if e ~= nil then seekers[#seekers + 1] = {u, e} end
        end
        for _, u in ipairs(due) do
            if not in_open[u] then
                local e = get_entry(u)
                if e ~= nil then seekers[#seekers + 1] = {u, e} end
            end
        end
        table.sort(seekers, function(a, b)
            if a[2].t ~= b[2].t then return a[2].t < b[2].t end
            return a[2].s < b[2].s
        end)
        for _, se in ipairs(seekers) do
            local u, e = se[1], se[2]
            if get_entry(u) == e then  -- not matched earlier in this tick
                redis.call('ZREM', rkey(q), u)
                local p_id, p, blocked = find_partner(u, e, now, timeout)
                if p_id ~= nil then
                    local w, we, s, sse = p_id, p, u, e
                    if e.t < p.t or (e.t == p.t and e.s < p.s) then w, we, s, sse = u, e, p_id, p end
                    local room_id = prefix .. string.format('%08x', #matches + 1)
                    matches[#matches + 1] = make_match(w, we, s, sse, now, room_id, runner, hist)
                elseif blocked > 0 then
                    redis.call('ZADD', rkey(q), blocked, u)
                end
            end
        end
    end
end
if #matches == 0 then return false end
return cmsgpack.pack(matches)
