-- register: (re)announce this instance and reconcile Redis with its local state, after a start,
-- after it was reaped, after local changes Redis missed (an outage), or after Redis lost its data.
-- ARGV: instance, epoch, lease ttl ms, now ms, generation (written if Redis has none), restore
--       (1: Redis lost its data: rooms with users of other instances are restored too),
--       provisional lease ms (for a partner's instance not registered yet), msgpack
--       {users, totalMatches, conns {ip: n}, first (1 on the first call of a registration)} with
--   users: {{user, ip, socket id, room id|'', partner|'', partner instance|'', mode, initiator,
--            responder, waiting (0|1)}...}
-- Returns msgpack {generation, users whose local room is no more (end it locally)}.
-- A local room is kept when Redis agrees (the user's session names it), or, on restore, when
-- nothing in Redis contradicts it (no session, or the partner's session names it too).  The
-- partner's session is created as a stand-in when its instance has not restored it yet: its
-- instance then has `provisional` ms to register (else it is reaped: the partner is told).
local me, epoch, ttl, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local restore, provisional = ARGV[6] == '1', tonumber(ARGV[7])
local data = cmsgpack.unpack(ARGV[8])
redis.call('SET', GENERATION, ARGV[5], 'NX')
redis.call('HSET', EPOCHS, me, epoch)
redis.call('HDEL', SUSPECTS, me)
redis.call('SET', ikeyinst(me), epoch, 'PX', ttl)
redis.call('SADD', INSTANCES, me)
if redis.call('EXISTS', inbox(me)) == 0 then
    redis.call('XADD', inbox(me), 'MAXLEN', '~', INBOX_MAXLEN, '*', 'b', cmsgpack.pack({}))
end

local function online(inst, u)
    if redis.call('SADD', iusers(inst), u) == 1 then redis.call('HINCRBY', STATS, 'online', 1) end
end

local function put_room(x)
    local room_id = x[4]
    if redis.call('EXISTS', 'room:' .. room_id) == 0 then
        local insts = {[x[1]] = me, [x[5]] = x[6]}
        redis.call('SET', 'room:' .. room_id, json({roomId = room_id, mode = x[7],
            users = arr({x[8], x[9]}), initiator = x[8], responder = x[9], instances = insts,
            createdAt = now, lastActivity = now}), 'EX', ROOM_TTL)
    end
    if redis.call('SADD', ROOMS, room_id) == 1 then redis.call('HINCRBY', STATS, 'activeChats', 1) end
end

local ended = {}
for _, x in ipairs(data[1]) do
    local u, room_id, partner, pinst = x[1], x[4], x[5], x[6]
    local d = get_user(u)
    local current = d and d.roomId ~= cjson.null and d.roomId or nil
    local keep, pd = false, nil
    if room_id ~= '' then
        if d ~= nil then
            keep = current == room_id
        else
            keep = restore
        end
        if keep and restore and pinst ~= me then
            pd = get_user(partner)
            if pd ~= nil and pd.roomId ~= room_id then keep = false end
        end
        if not keep then ended[#ended + 1] = u end
    end
    if current ~= nil and (current ~= room_id or not keep) then
        end_room(u, d, 'disconnected', me, now, nil)  -- a room this instance ended meanwhile
    end
    if x[10] ~= 1 then dequeue(u) end  -- waiting users are queued again by the caller (join)
    local nd = {userId = u, instance = me, ip = x[2], socketId = x[3], state = 'idle',
                connectedAt = d and d.connectedAt or now}
    if keep then
        nd.state, nd.roomId, nd.partnerId, nd.partnerInstance = 'chatting', room_id, partner, pinst
        put_room(x)
        if pinst ~= me and pd == nil then
            -- stand-in for the partner until its own instance restores it
            put_user({userId = partner, instance = pinst, state = 'chatting', roomId = room_id,
                      partnerId = u, partnerInstance = me, connectedAt = now})
            online(pinst, partner)
            redis.call('SADD', INSTANCES, pinst)
            redis.call('SET', ikeyinst(pinst), 'provisional', 'PX', provisional, 'NX')
            if redis.call('EXISTS', inbox(pinst)) == 0 then
                redis.call('XADD', inbox(pinst), 'MAXLEN', '~', INBOX_MAXLEN, '*', 'b',
                    cmsgpack.pack({}))
            end
        end
    end
    put_user(nd)
    redis.call('SET', 'socket:' .. x[3], u, 'EX', USER_TTL)
    online(me, u)
end
if data[4] == 1 then  -- the first call: this instance's per-IP counts replace those Redis has
    local old = redis.call('HGETALL', iconns(me))
    for k = 1, #old, 2 do
        local ck = 'conns:' .. old[k]
        if redis.call('DECRBY', ck, old[k + 1]) <= 0 then redis.call('DEL', ck) end
    end
    redis.call('DEL', iconns(me))
end
for ip, c in pairs(data[3] or {}) do
    redis.call('INCRBY', 'conns:' .. ip, c)
    redis.call('HINCRBY', iconns(me), ip, c)
end
local known = tonumber(data[2]) or 0
local total = tonumber(redis.call('HGET', STATS, 'totalMatches') or '0')
if known > total then redis.call('HSET', STATS, 'totalMatches', known) end
return cmsgpack.pack({redis.call('GET', GENERATION), ended})
