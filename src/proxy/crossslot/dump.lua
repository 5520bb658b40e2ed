#!lua flags=allow-cross-slot-keys,no-writes
-- slotproxy: reads keys of this node (in any of its slots) for a command whose other keys
-- live on another node: each key's DUMP (false when it does not exist) and absolute expire
-- time in ms (0 for none), as {dump, expire} pairs in the order asked.
-- ARGV: max copy bytes, then the key names.
-- `-SLOTPROXY-RETRY …`: some key is not served here now (a slot in migration).
local max_bytes = tonumber(ARGV[1])
local out = {}
for n = 2, #ARGV do
  local r = redis.pcall('TYPE', ARGV[n])
  if type(r) == 'table' and r.err then return { err = 'SLOTPROXY-RETRY ' .. ARGV[n] .. ': ' .. r.err } end
end
for n = 2, #ARGV do
  local d = redis.call('DUMP', ARGV[n])
  if d and #d > max_bytes then
    return { err = 'ERR slotproxy: key ' .. ARGV[n] .. ' is ' .. #d ..
      ' bytes serialized, over compat.max_copy_bytes (' .. max_bytes ..
      ') that a command across nodes may copy' }
  end
  local e = 0
  if d then e = math.max(redis.call('PEXPIRETIME', ARGV[n]), 0) end
  out[#out + 1] = { d or false, e }
end
return out
