-- The top n of a leaderboard and one member's rank and score, from one consistent snapshot.
-- KEYS[1]  the tenant's board (scores stored negated, see leaderboard.py)
-- ARGV[1]  n                          ARGV[2]  member
-- Returns {{member, negated score, ...}, rank or false, negated score or false}.
-- Scores travel as strings: a Lua number would be truncated to an integer on the way out.
local n = tonumber(ARGV[1])
local top = {}
if n > 0 then
  top = redis.call('ZRANGE', KEYS[1], 0, n - 1, 'WITHSCORES')
end
return {top, redis.call('ZRANK', KEYS[1], ARGV[2]), redis.call('ZSCORE', KEYS[1], ARGV[2])}
