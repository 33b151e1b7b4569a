-- One GCRA step (see gcra.rs, whose arithmetic this repeats): takes one request from the budget
-- KEYS[1] if it fits. ARGV[1] = T, ARGV[2] = tau, in microseconds. The clock is the server's, so
-- every replica shares it. Returns integers only: {allowed (1|0), remaining, reset_us,
-- retry_after_us}. The stored TAT expires when the bucket is full again. ARGV[3], only ever
-- passed by the tests that hold this script to gcra.rs, replaces the clock.
-- The writes below follow TIME, a non-deterministic command: Redis before 5 refuses that unless
-- the script replicates its effects rather than itself (the default from 5 on, where this call is
-- a deprecated no-op).
if redis.replicate_commands then
  redis.replicate_commands()
end
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
-- Microsecond times stay below 2^53: exact in Lua's doubles. '%.0f' writes them without an
-- exponent (tostring would keep 14 digits).
local tat = tonumber(redis.call('GET', KEYS[1]))
local base = now
if tat and tat > now then
  base = tat
end
local new_tat = base + t
local ahead = new_tat - now
if ahead <= tau then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
    'PX', string.format('%.0f', math.ceil(ahead / 1000)))
  return {1, math.floor((tau - ahead) / t), ahead, 0}
end
local held = base - now
local room = tau - held
if room < 0 then
  room = 0
end
return {0, math.floor(room / t), held, ahead - tau}
