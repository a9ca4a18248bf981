-- claim: a user resumes on this instance the session it had on another (anygle/resume.py).
-- ARGV: resume key, new resume key, this instance, now ms
-- Moves the user here at once: its record, the instance user sets, its queue entry, its room's
-- and partner's idea of where it is.  The old instance is told ('h': hand the session over,
-- then forward what still reaches it); the partner's instance, when a third one, learns where
-- to relay ('v').  Returns msgpack {user, old instance, partner instance or ''}, or {} when the
-- key is unknown, its user gone, or the user is here already (or its instance is gone).
local key, new_key, runner, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local u = redis.call('GET', rskey(key))
if not u then return cmsgpack.pack({}) end
local d = get_user(u)
if d == nil or d.resumeKey ~= key or d.instance == runner then return cmsgpack.pack({}) end
local old = d.instance
-- an instance reaped, fenced or without a lease (dead, soon reaped) cannot hand anything over
if not redis.call('HGET', EPOCHS, old) or redis.call('EXISTS', ikeyinst(old)) == 0 then
    return cmsgpack.pack({})
end
redis.call('DEL', rskey(key))
redis.call('SET', rskey(new_key), u, 'EX', USER_TTL)
d.instance, d.resumeKey = runner, new_key
put_user(d)
if redis.call('SREM', iusers(old), u) == 1 then redis.call('SADD', iusers(runner), u) end
local e = get_entry(u)
if e ~= nil then
    e.n = runner
    put_entry(u, e)
end
local pinst = ''
if d.roomId ~= nil and d.roomId ~= cjson.null then
    local pd = get_user(d.partnerId)
    if pd ~= nil and pd.roomId == d.roomId then
        pd.partnerInstance = runner
        put_user(pd)
        pinst = pd.instance
    end
    local raw = redis.call('GET', 'room:' .. d.roomId)
    if raw then
        local room = cjson.decode(raw)
        room.instances[u] = runner
        redis.call('SET', 'room:' .. d.roomId, room_json(room), 'KEEPTTL')
    end
    if pinst ~= '' and pinst ~= runner and pinst ~= old then
        notify(pinst, {{'v', d.roomId, u, runner}})
    end
end
notify(old, {{'h', u, runner}})
return cmsgpack.pack({u, old, pinst})
