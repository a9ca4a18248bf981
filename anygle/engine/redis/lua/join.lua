-- join: queue user ARGV[1] (replacing an earlier entry) and match at once if possible.
-- ARGV: user, instance, queue, interests (msgpack array), interestsOnly (0/1), joined ms, now ms,
--       interest timeout ms, room id for a match, match history length
-- Returns msgpack: {'match', m} | {'queued', blocked_until} | {'inroom'} | {'nouser'} |
--                  {'banned', reason}
local u, runner, q = ARGV[1], ARGV[2], ARGV[3]
local interests = cmsgpack.unpack(ARGV[4])
local only = ARGV[5] == '1'
local joined, now, timeout = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local room_id, hist = ARGV[9], tonumber(ARGV[10])

local d = get_user(u)
if d == nil then return cmsgpack.pack({'nouser'}) end
if d.roomId ~= nil then return cmsgpack.pack({'inroom'}) end
local banned = redis.call('GET', 'banned:users:' .. u)
if not banned and d.ip and d.ip ~= '' then banned = redis.call('GET', 'banned:ips:' .. d.ip) end
if banned then return cmsgpack.pack({'banned', banned}) end
dequeue(u)
local set = {}
for _, i in ipairs(interests) do set[i] = true end
local e = {q = q, i = interests, o = only, t = joined, s = redis.call('INCR', 'queue:seq'),
           n = d.instance, set = set}
local p_id, p, blocked = find_partner(u, e, now, timeout)
if p_id ~= nil then
    return cmsgpack.pack({'match', make_match(p_id, p, u, e, now, room_id, runner, hist)})
end
enqueue(u, e, now, timeout)
if blocked > 0 then redis.call('ZADD', rkey(q), blocked, u) end
d.state = 'waiting'
d.prefs = {ageCategory = string.match(q, '^([^:]+)'), mode = queue_mode(q),
           queueType = string.match(q, ':([^:]+)$'), interests = arr(interests),
           interestsOnly = only, joinedAt = joined}
put_user(d)
return cmsgpack.pack({'queued', blocked})
