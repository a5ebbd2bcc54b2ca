-- One job's record (read-only): the job hash when there is one (retried, reclaimed, delayed,
-- completed, dead), else its message in the stream (job id = entry id), and whether a consumer
-- holds it (the group's pending list).
-- KEYS[1] stream   KEYS[2] job hash   ARGV[1] group   ARGV[2] job id   ARGV[3] 1 if the id is an entry id
-- Returns a flat {field, value, ...} list; empty when the job is unknown.
local stream, job, group = KEYS[1], KEYS[2], ARGV[1]
local out = redis.call('HGETALL', job)
local h = {}
for i = 1, #out, 2 do
  h[out[i]] = out[i + 1]
end
local eid = h['entry']
if #out == 0 then
  if ARGV[3] ~= '1' then
    return {}
  end
  eid = ARGV[2]
end
if not eid then
  return out
end
local entry = redis.call('XRANGE', stream, eid, eid)[1]
if not entry then
  return out
end
local f = {}
for i = 1, #entry[2], 2 do
  f[entry[2][i]] = entry[2][i + 1]
end
local p = redis.pcall('XPENDING', stream, group, eid, eid, 1)
local status, deliveries = 'queued', tonumber(f.d or '0')
if type(p) == 'table' and not p.err and p[1] then
  status = 'running'
  deliveries = deliveries + tonumber(p[1][4])
  out[#out + 1] = 'consumer'
  out[#out + 1] = p[1][2]
end
for _, kv in ipairs({{'status', status}, {'deliveries', deliveries}, {'payload', f.p},
    {'enqueued_at', tonumber(f.t or string.match(eid, '^(%d+)-'))}}) do
  out[#out + 1] = kv[1]
  out[#out + 1] = kv[2]
end
return out
