-- Delete a live session and tell the caller whose it was (to clean the user's index).
-- KEYS[1]  the session hash
-- Returns the user id, or false if there was no live session. A revocation tombstone is left alone.
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then
  return false
end
local uid = redis.call('HGET', KEYS[1], 'm.uid')
redis.call('DEL', KEYS[1])
return uid
