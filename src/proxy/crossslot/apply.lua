#!lua flags=allow-cross-slot-keys
-- slotproxy: writes back what a command across nodes changed in this node's keys, all at
-- once: per key its new DUMP and absolute expire time in ms (0: none), or an empty dump to
-- delete it.
-- ARGV: triples of name, dump, expire.
-- `-SLOTPROXY-RETRY …`: some key is not served here now (a slot in migration); nothing written.
for n = 1, #ARGV, 3 do
  local r = redis.pcall('TYPE', ARGV[n])
  if type(r) == 'table' and r.err then return { err = 'SLOTPROXY-RETRY ' .. ARGV[n] .. ': ' .. r.err } end
end
for n = 1, #ARGV, 3 do
  local name, dump, expire = ARGV[n], ARGV[n + 1], tonumber(ARGV[n + 2])
  if dump == '' then
    redis.call('DEL', name)
  elseif expire > 0 then
    redis.call('RESTORE', name, expire, dump, 'ABSTTL', 'REPLACE')
  else
    redis.call('RESTORE', name, 0, dump, 'REPLACE')
  end
end
return { ok = 'OK' }
