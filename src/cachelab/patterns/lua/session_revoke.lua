-- Replace whatever is under a session id with a short-lived tombstone (log-out-everywhere).
-- KEYS[1]  the session hash
-- ARGV[1]  tombstone TTL, ms
-- Returns 1 if a live session was revoked, else 0. The tombstone is written even when nothing
-- was there: a create or rotation that already put this id in the index, but has not written
-- the session yet, must find the id taken (session_create refuses existing keys).
local live = 0
if redis.call('TYPE', KEYS[1]).ok == 'hash' and redis.call('HEXISTS', KEYS[1], 'm.abs') == 1 then
  live = 1
end
redis.call('SET', KEYS[1], 'revoked', 'PX', ARGV[1])
return live
