#!lua flags=allow-cross-slot-keys
-- slotproxy: runs commands whose keys are in several hash slots of this node, atomically.
--
-- A Redis Cluster node refuses one command whose keys are in two slots, but a script with
-- this flag may run several commands on different slots of its node. So every key outside
-- the home slot is copied (DUMP/RESTORE, with its expiry) into a temporary key of the home
-- slot, the real commands run on those, what they changed is written back and the
-- temporaries are deleted. Redis computes every result itself.
--
-- ARGV: resp ('2'|'3'), max copy bytes, export ('1': return changed imported keys),
--   nkeys, then per key: name, mode ('d' direct: in the home slot; 'c' copy: another slot
--   of this node; 'i' imported: a copy of a key of another node, given here), temporary name,
--   dump ('' when the key does not exist), expire (ms, absolute; 0 for none),
--   ncommands, then per command: resp3 ('1': run with RESP3 replies), shape, nargs, args,
--   nkeys, (argument index, key index) pairs, rename ('1': the reply may name keys),
--   single ('1': reply with the one command's reply, not an array).
-- A reply `-SLOTPROXY-RETRY …` means some key is not served here now (a slot in migration,
-- or a map that is out of date) and nothing was changed.
local argv = ARGV
local i = 1
local function take()
  local v = argv[i]
  i = i + 1
  return v
end
local resp3 = take() == '3'
local max_bytes = tonumber(take())
local export = take() == '1'
local keys = {}
for k = 1, tonumber(take()) do
  keys[k] = { name = take(), mode = take(), tmp = take(), dump = take(), expire = tonumber(take()) }
end
local commands = {}
for c = 1, tonumber(take()) do
  local cmd = { resp3 = take() == '1', shape = take(), args = {}, subst = {} }
  for a = 1, tonumber(take()) do cmd.args[a] = take() end
  for _ = 1, tonumber(take()) do
    local pos = tonumber(take())
    cmd.subst[#cmd.subst + 1] = { pos, tonumber(take()) }
  end
  cmd.rename = take() == '1'
  commands[c] = cmd
end
local single = take() == '1'

-- 1. Every key and temporary is served here; nothing is written before this holds.
local function failed(r) return type(r) == 'table' and r.err ~= nil end
for _, key in ipairs(keys) do
  if key.mode ~= 'i' then
    local r = redis.pcall('TYPE', key.name)
    if failed(r) then return { err = 'SLOTPROXY-RETRY ' .. key.name .. ': ' .. r.err } end
  end
  if key.tmp ~= '' then
    local r = redis.pcall('EXISTS', key.tmp)
    if failed(r) then return { err = 'SLOTPROXY-RETRY ' .. r.err } end
    if r ~= 0 then return { err = 'ERR slotproxy: temporary key ' .. key.tmp .. ' exists' } end
  end
end

-- 2. Read every key to copy, within the bound (still nothing written).
for _, key in ipairs(keys) do
  if key.mode == 'c' then
    local d = redis.call('DUMP', key.name)
    if d then
      key.dump = d
      local e = redis.call('PEXPIRETIME', key.name)
      if e > 0 then key.expire = e else key.expire = 0 end
    else
      key.dump = ''
    end
  end
  if key.mode ~= 'd' and #key.dump > max_bytes then
    return { err = 'ERR slotproxy: key ' .. key.name .. ' is ' .. #key.dump ..
      ' bytes serialized, over compat.max_copy_bytes (' .. max_bytes ..
      ') that a command across hash slots may copy' }
  end
end

-- 3. The temporaries.
local function restore(name, dump, expire, replace)
  local args = { 'RESTORE', name, 0, dump }
  if expire > 0 then args[3] = expire; args[#args + 1] = 'ABSTTL' end
  if replace then args[#args + 1] = 'REPLACE' end
  return redis.pcall(unpack(args))
end
local function cleanup()
  for _, key in ipairs(keys) do
    if key.tmp ~= '' then redis.call('DEL', key.tmp) end
  end
end
for _, key in ipairs(keys) do
  if key.tmp ~= '' and key.dump ~= '' then
    local r = restore(key.tmp, key.dump, key.expire, false)
    if failed(r) then cleanup(); return r end
    key.before = redis.call('DUMP', key.tmp)
    key.before_expire = redis.call('PEXPIRETIME', key.tmp)
  end
end

-- 4. The commands, each on the temporaries of its keys.
local names = {}
for _, key in ipairs(keys) do
  if key.tmp ~= '' then names[key.tmp] = key.name end
end
local function rename(v, depth)
  if type(v) == 'string' then return names[v] or v end
  if type(v) ~= 'table' or depth > 4 then return v end
  if v.map then
    local m = {}
    for k, x in pairs(v.map) do m[rename(k, depth + 1)] = rename(x, depth + 1) end
    v.map = m
    return v
  end
  for n = 1, #v do v[n] = rename(v[n], depth + 1) end
  return v
end
local function shape(r, how)
  if type(r) ~= 'table' or r.err then return r end
  -- xMPOP's [key, [element]] as BLPOP's [key, element] and BZPOPMIN's [key, member, score].
  if how == 'p' then return { r[1], r[2][1] } end
  if how == 'z' then return { r[1], r[2][1][1], r[2][1][2] } end
  return r
end
local results = {}
for c, cmd in ipairs(commands) do
  for _, s in ipairs(cmd.subst) do
    local key = keys[s[2]]
    if key.tmp ~= '' then cmd.args[s[1]] = key.tmp end
  end
  if resp3 and cmd.resp3 then redis.setresp(3) end
  local r = redis.pcall(unpack(cmd.args))
  redis.setresp(2)
  if r == nil then r = false end
  if cmd.rename then r = rename(r, 1) end
  results[c] = shape(r, cmd.shape)
end

-- 5. What changed goes back to its key (or, for an imported key, back to the proxy).
local exports = {}
local write_error
for _, key in ipairs(keys) do
  if key.tmp ~= '' then
    local after = redis.call('DUMP', key.tmp)
    local after_expire = redis.call('PEXPIRETIME', key.tmp)
    local changed = after ~= (key.before or false) or
      (after and after_expire ~= key.before_expire)
    if key.mode == 'i' then
      if not changed then
        exports[#exports + 1] = 0
      elseif after then
        exports[#exports + 1] = { after, math.max(after_expire, 0) }
      else
        exports[#exports + 1] = false
      end
    elseif changed then
      local r
      if after then
        r = restore(key.name, after, math.max(after_expire, 0), true)
      else
        r = redis.pcall('DEL', key.name)
      end
      if failed(r) then write_error = r end
    end
  end
end
cleanup()
if write_error then return write_error end

local out = results
if single then out = results[1] end
if export then return { out, exports } end
return out
