-- The login throttle's step (see throttle.rs, whose arithmetic this repeats). KEYS[1] is the
-- (account, IP) pair, a hash {f = failures, t = last allowed attempt}; KEYS[2] the account, a
-- hash {f = failures, s = start of the window}. ARGV: backoff after (0 = off), backoff max
-- (whole seconds), account failure limit (0 = off), account window (microseconds). Refuses if
-- the pair is inside its backoff or the account at its cap, reporting the longer wait, and
-- changes nothing then; otherwise counts the attempt as a failure of both. Returns integers
-- only: {0, 0} allowed, {1, wait_us} refused by the pair's backoff, {2, wait_us} by the
-- account's cap. ARGV[5], only ever passed by the tests that hold this script to throttle.rs,
-- replaces the clock.
-- The writes below follow TIME, a non-deterministic command: Redis before 5 refuses that unless
-- the script replicates its effects rather than itself (the default from 5 on, where this call is
-- a deprecated no-op).
if redis.replicate_commands then
  redis.replicate_commands()
end
local after = tonumber(ARGV[1])
local max_secs = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end

local function fmt(n)
  return string.format('%.0f', n)
end

local function delay(failures)
  if after == 0 or failures < after then
    return 0
  end
  local exponent = failures - after
  local secs = max_secs
  if exponent < 20 then
    secs = math.min(2 ^ exponent, max_secs)
  end
  return secs * 1000000
end

local pair_failures, pair_last
if after > 0 then
  local pair = redis.call('HMGET', KEYS[1], 'f', 't')
  if pair[1] and pair[2] then
    pair_failures = tonumber(pair[1])
    pair_last = tonumber(pair[2])
    if pair_last + delay(pair_failures) + window <= now then
      pair_failures = nil
    end
  end
end
local account_failures, account_start
if limit > 0 then
  local account = redis.call('HMGET', KEYS[2], 'f', 's')
  if account[1] and account[2] then
    account_failures = tonumber(account[1])
    account_start = tonumber(account[2])
    if account_start + window <= now then
      account_failures = nil
    end
  end
end

local pair_wait = 0
if pair_failures then
  pair_wait = pair_last + delay(pair_failures) - now
end
local account_wait = 0
if account_failures and account_failures >= limit then
  account_wait = account_start + window - now
end
if pair_wait > 0 or account_wait > 0 then
  if account_wait > pair_wait then
    return {2, account_wait}
  end
  return {1, pair_wait}
end

if after > 0 then
  local failures = (pair_failures or 0) + 1
  redis.call('HSET', KEYS[1], 'f', fmt(failures), 't', fmt(now))
  redis.call('PEXPIRE', KEYS[1], fmt(math.ceil((delay(failures) + window) / 1000)))
end
if limit > 0 then
  if account_failures then
    account_failures = account_failures + 1
  else
    account_failures = 1
    account_start = now
  end
  redis.call('HSET', KEYS[2], 'f', fmt(account_failures), 's', fmt(account_start))
  redis.call('PEXPIRE', KEYS[2], fmt(math.ceil((account_start + window - now) / 1000)))
end
return {0, 0}
