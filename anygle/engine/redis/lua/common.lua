-- Shared by every script of the redis engine (anygle/engine/redis/engine.py prepends it).
--
-- Matching mirrors anygle/matching.py and MemoryEngine exactly; see docs/operations.md "Keys" for every key.
-- Keys are built here, not passed in KEYS: the engine targets one Redis (no cluster).
-- Times are integer milliseconds of the engine clock, passed in by the caller (never Redis TIME),
-- so that interest timeouts and cooldowns use the same clock as the memory engine.

local USER_TTL = 3600
local ROOM_TTL = 1800
local INBOX_MAXLEN = 100000
local WAITING = 'waiting'          -- hash user -> cmsgpack entry {q,i,o,t,s,n}
local STATS = 'stats:global'
local WAITS = 'stats:waits'        -- list: recent waits (ms), newest first
local ROOMS = 'rooms'              -- set of live room ids (reconciles activeChats)
local INSTANCES = 'instances'      -- set of registered instance ids
local EPOCHS = 'instances:epoch'   -- hash instance -> epoch of its registration (fencing)
local SUSPECTS = 'instances:suspect' -- hash instance -> Redis ms when its lease was seen gone
local GENERATION = 'generation'    -- written by the first registration after Redis lost its data

local ARRAY = {}                   -- metatable marking a Lua table as a JSON array

local function arr(t)
    return setmetatable(t or {}, ARRAY)
end

local function json(v)
    local tv = type(v)
    if tv == 'table' then
        if getmetatable(v) == ARRAY or v[1] ~= nil then
            local out = {}
            for k = 1, #v do out[k] = json(v[k]) end
            return '[' .. table.concat(out, ',') .. ']'
        end
        local out = {}
        for k, x in pairs(v) do out[#out + 1] = cjson.encode(tostring(k)) .. ':' .. json(x) end
        if #out == 0 then return '{}' end
        table.sort(out)
        return '{' .. table.concat(out, ',') .. '}'
    elseif tv == 'number' then
        if v == math.floor(v) and math.abs(v) < 1e15 then return string.format('%d', v) end
        return cjson.encode(v)
    elseif v == nil then
        return 'null'
    end
    return cjson.encode(v)
end

-- A room read back with cjson.decode has lost which of its empty tables are JSON arrays: mark
-- them again before it is written back (touch.lua, claim.lua).
local function room_json(room)
    room.users = arr(room.users)
    if room.sharedInterests then room.sharedInterests = arr(room.sharedInterests) end
    if room.interests then
        for k, v in pairs(room.interests) do room.interests[k] = arr(v) end
    end
    return json(room)
end

local function ukey(u) return 'user:' .. u end
local function rskey(k) return 'resume:' .. k end                -- resume key -> user (claim.lua)
local function qkey(q) return 'queue:' .. q end
local function ikey(q, i) return 'qi:' .. q .. ':' .. i end      -- set: waiting users with interest i
local function okey(q) return 'qopen:' .. q end                  -- zset: open users, score join ms
local function pkey(q) return 'qpending:' .. q end               -- zset: not open yet, score opens-at
local function rkey(q) return 'qretry:' .. q end                 -- zset: cooldown-blocked, score retry-at
local function wkey(q) return 'qwaits:' .. q end                 -- list: recent waits in q (ms)
local function inbox(n) return 'inbox:' .. n end                 -- stream: events for instance n
local function ikeyinst(n) return 'instance:' .. n end           -- lease (PX), value: epoch
local function iusers(n) return 'instance:' .. n .. ':users' end -- set: users of instance n
local function iconns(n) return 'instance:' .. n .. ':conns' end -- hash: ip -> open connections
local function ckey(a, b)                                        -- cooldown of a pair: until (ms)
    if a < b then return 'cooldown:' .. a .. ':' .. b end
    return 'cooldown:' .. b .. ':' .. a
end

local function get_user(u)
    local raw = redis.call('GET', ukey(u))
    if not raw then return nil end
    local d = cjson.decode(raw)
    if d.prefs and d.prefs ~= cjson.null then d.prefs.interests = arr(d.prefs.interests) end
    return d
end

local function put_user(d)
    redis.call('SET', ukey(d.userId), json(d), 'EX', USER_TTL)
end

-- NOMKSTREAM: the inbox of a reaped instance is not created again by a late event (register.lua
-- creates an instance's inbox)
local function notify(inst, events)
    redis.call('XADD', inbox(inst), 'NOMKSTREAM', 'MAXLEN', '~', INBOX_MAXLEN, '*', 'b',
        cmsgpack.pack(events))
end

-- banned:{kind}:{value} = reason (ttl ms, 0: for good); a banned user connected to another
-- instance than the runner's is kicked through that instance's inbox.
local function set_ban(kind, value, reason, ttl, runner)
    local k = 'banned:' .. kind .. ':' .. value
    if ttl > 0 then redis.call('SET', k, reason, 'PX', ttl) else redis.call('SET', k, reason) end
    if kind == 'users' then
        local d = get_user(value)
        if d ~= nil and d.instance ~= runner then notify(d.instance, {{'k', value, 'BANNED', reason}}) end
    end
end

local alive_cache = {}
local function alive(inst)
    local a = alive_cache[inst]
    if a == nil then
        a = redis.call('EXISTS', ikeyinst(inst)) == 1
        alive_cache[inst] = a
    end
    return a
end

-- queue entries --------------------------------------------------------------------------------

local entry_cache = {}
local function get_entry(u)
    local e = entry_cache[u]
    if e == nil then
        local raw = redis.call('HGET', WAITING, u)
        if not raw then return nil end
        e = cmsgpack.unpack(raw)
        local set = {}
        for _, i in ipairs(e.i) do set[i] = true end
        e.set = set
        entry_cache[u] = e
    end
    return e
end

local function is_open(e, now, timeout)
    if #e.i == 0 then return true end
    if e.o then return false end
    return now - e.t >= timeout
end

local function dequeue(u)
    local e = get_entry(u)
    if e == nil then return nil end
    entry_cache[u] = nil
    redis.call('HDEL', WAITING, u)
    redis.call('ZREM', qkey(e.q), u)
    redis.call('ZREM', okey(e.q), u)
    redis.call('ZREM', pkey(e.q), u)
    redis.call('ZREM', rkey(e.q), u)
    for _, i in ipairs(e.i) do redis.call('SREM', ikey(e.q, i), u) end
    return e
end

local function put_entry(u, e)
    redis.call('HSET', WAITING, u, cmsgpack.pack({q = e.q, i = e.i, o = e.o, t = e.t, s = e.s, n = e.n}))
end

local function enqueue(u, e, now, timeout)
    put_entry(u, e)
    redis.call('ZADD', qkey(e.q), e.t, u)
    for _, i in ipairs(e.i) do redis.call('SADD', ikey(e.q, i), u) end
    if is_open(e, now, timeout) then
        redis.call('ZADD', okey(e.q), e.t, u)
    elseif not e.o then
        redis.call('ZADD', pkey(e.q), e.t + timeout, u)
    end
end

local function cooling(a, b, now)
    local v = redis.call('GET', ckey(a, b))
    if v then
        v = tonumber(v)
        if v > now then return v end
    end
    return 0
end

-- preference: most shared interests, then oldest join, then first arrived (seq)
local function better(shared, c, bshared, b)
    if b == nil then return true end
    if shared ~= bshared then return shared > bshared end
    if c.t ~= b.t then return c.t < b.t end
    return c.s < b.s
end

-- The best partner for seeker u (entry e) in its queue, or nil and the end of the first cooldown
-- that blocked a candidate (0 when none did: the tick tries again then).  Users of dead instances
-- are never candidates.
local function find_partner(u, e, now, timeout)
    local best, best_id, best_shared = nil, nil, -1
    local blocked = 0
    local seen = {}
    -- one candidate: skipped when it is the seeker, seen, cooling (noting when) or gone
    local function consider(c_id)
        if seen[c_id] or c_id == u then return end
        seen[c_id] = true
        local until_ = cooling(u, c_id, now)
        if until_ > 0 then
            if blocked == 0 or until_ < blocked then blocked = until_ end
            return
        end
        local c = get_entry(c_id)
        if c == nil or not alive(c.n) then return end
        local shared = 0
        for _, i in ipairs(c.i) do if e.set[i] then shared = shared + 1 end end
        if better(shared, c, best_shared, best) then
            best, best_id, best_shared = c, c_id, shared
        end
    end
    for _, interest in ipairs(e.i) do
        for _, c_id in ipairs(redis.call('SMEMBERS', ikey(e.q, interest))) do consider(c_id) end
    end
    if best == nil and is_open(e, now, timeout) then
        for _, c_id in ipairs(redis.call('ZRANGE', okey(e.q), 0, -1)) do consider(c_id) end
    end
    return best_id, best, blocked
end

-- rooms ----------------------------------------------------------------------------------------

local function queue_mode(q)
    return string.match(q, '^[^:]+:([^:]+):')
end

local function push_wait(q, w, hist)
    redis.call('LPUSH', WAITS, w)
    redis.call('LTRIM', WAITS, 0, hist - 1)
    redis.call('LPUSH', wkey(q), w)
    redis.call('LTRIM', wkey(q), 0, hist - 1)
end

-- Create the room of waiter w (entry we) and seeker s (entry se); the waiter is the initiator.
-- Events go to the inbox of every instance involved except `runner` (it gets the return value).
local function make_match(w, we, s, se, now, room_id, runner, hist)
    dequeue(w)
    dequeue(s)
    local shared = arr()
    for _, i in ipairs(we.i) do if se.set[i] then shared[#shared + 1] = i end end
    local mode = queue_mode(se.q)
    local insts = {[w] = we.n, [s] = se.n}
    for _, pair in ipairs({{w, s}, {s, w}}) do
        local d = get_user(pair[1])
        if d ~= nil then
            d.state = 'chatting'
            d.roomId = room_id
            d.partnerId = pair[2]
            d.partnerInstance = insts[pair[2]]
            put_user(d)
        end
    end
    local room = {
        roomId = room_id, mode = mode, queue = se.q, users = arr({w, s}),
        initiator = w, responder = s, instances = insts,
        interests = {[w] = arr(we.i), [s] = arr(se.i)}, sharedInterests = shared,
        createdAt = now, lastActivity = now,
    }
    redis.call('SET', 'room:' .. room_id, json(room), 'EX', ROOM_TTL)
    redis.call('SADD', ROOMS, room_id)
    redis.call('HINCRBY', STATS, 'activeChats', 1)
    redis.call('HINCRBY', STATS, 'totalMatches', 1)
    push_wait(se.q, now - we.t, hist)
    push_wait(se.q, now - se.t, hist)
    -- {roomId, mode, initiator, responder, interests{}, shared[], matchedAt ms, instances{}}
    local m = {room_id, mode, w, s, {[w] = we.i, [s] = se.i}, shared, now, insts}
    local done = {}
    for _, n in ipairs({we.n, se.n}) do
        if n ~= runner and not done[n] then
            done[n] = true
            notify(n, {{'m', m}})
        end
    end
    return m
end

-- End u's room (if any).  Exactly one caller ends a room: the first one to find it in the
-- user's session.  The partner is told through its instance's inbox unless it lives on `runner`;
-- returns partner, partner instance, room id (nils when u was in no room).
local function end_room(u, d, reason, runner, now, cooldown)
    if d == nil or d.roomId == nil or d.roomId == cjson.null then return nil end
    local room_id, partner, pinst = d.roomId, d.partnerId, d.partnerInstance
    d.state, d.roomId, d.partnerId, d.partnerInstance = 'idle', nil, nil, nil
    local pd = get_user(partner)
    local was_in = pd ~= nil and pd.roomId == room_id
    if was_in then
        pd.state, pd.roomId, pd.partnerId, pd.partnerInstance = 'idle', nil, nil, nil
        put_user(pd)
        pinst = pd.instance
    end
    redis.call('DEL', 'room:' .. room_id)
    if redis.call('SREM', ROOMS, room_id) == 1 then
        redis.call('HINCRBY', STATS, 'activeChats', -1)
    end
    if reason == 'skipped' and cooldown then
        redis.call('SET', ckey(u, partner), string.format('%d', now + cooldown),
            'PX', math.max(1, cooldown + 60000))
    end
    if was_in and pinst ~= runner then
        notify(pinst, {{'l', partner, room_id, reason}})
    end
    return partner, pinst, room_id
end

-- Remove user u for good (disconnect or reaping): queue entry, room, session, online count.
local function remove_user(u, inst, runner, now)
    dequeue(u)
    local d = get_user(u)
    local partner, pinst, room_id = end_room(u, d, 'disconnected', runner, now, nil)
    if d ~= nil then
        if d.socketId then redis.call('DEL', 'socket:' .. d.socketId) end
        if d.resumeKey then redis.call('DEL', rskey(d.resumeKey)) end
        redis.call('DEL', ukey(u))
    end
    if redis.call('SREM', iusers(inst), u) == 1 then
        redis.call('HINCRBY', STATS, 'online', -1)
    end
    return partner, pinst, room_id
end

-- Reap instance n: every user leaves queues and rooms (partners told), its keys go.  At most
-- `limit` users per call (a script blocks Redis: 10 000 users would take a while); returns the
-- users removed and whether some are left (then the instance stays registered and the next call
-- goes on — matching already ignores users of an instance without heartbeat).
local function reap(n, now, limit)
    redis.call('HDEL', EPOCHS, n)  -- fenced from the first batch on: n cannot renew any more
    local users = redis.call('SRANDMEMBER', iusers(n), limit)
    -- partners on n itself are not told (n is gone); the reaper's own users hear it through its
    -- inbox like everybody else
    for _, u in ipairs(users) do remove_user(u, n, n, now) end
    if redis.call('SCARD', iusers(n)) > 0 then return #users, true end
    local conns = redis.call('HGETALL', iconns(n))
    for k = 1, #conns, 2 do
        local ck = 'conns:' .. conns[k]
        if redis.call('DECRBY', ck, conns[k + 1]) <= 0 then redis.call('DEL', ck) end
    end
    redis.call('DEL', iusers(n), iconns(n), ikeyinst(n), inbox(n))
    redis.call('SREM', INSTANCES, n)
    redis.call('HDEL', SUSPECTS, n)
    return #users, false
end
