-- Trim the stream's acknowledged head, never an unacknowledged message: everything before the
-- oldest pending entry (delivered, not acked) and before the first never-delivered entry goes.
-- KEYS[1] stream   ARGV[1] group
-- Returns the number of entries removed.
local stream, group = KEYS[1], ARGV[1]
local groups = redis.pcall('XINFO', 'GROUPS', stream)
if type(groups) ~= 'table' or groups.err then
  return 0
end
local last = nil
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do
    info[g[i]] = g[i + 1]
  end
  if info['name'] == group then
    last = info['last-delivered-id']
  end
end
if not last or last == '0-0' then
  return 0
end
local pending = redis.call('XPENDING', stream, group)
local boundary = last  -- entries after it were never delivered; it and they stay
if tonumber(pending[1]) > 0 then
  boundary = pending[2]  -- the oldest unacknowledged message, and everything after it, stay
end
-- MINID keeps ids >= boundary. '~' removes whole nodes only: cheaper, and it keeps at most a
-- node's worth of acknowledged entries; it never removes more than the exact trim would.
return redis.call('XTRIM', stream, 'MINID', '~', boundary)
