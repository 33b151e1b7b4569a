-- POST /auth/refresh along real rotation chains: $TOKENS holds one refresh token per session
-- (comma-separated), one per connection plus one per thread (wrk calls request() once per
-- thread before the connections start). Each wrk thread takes its share; a request takes a token
-- from the thread's pool and the response puts the successor back, so no two requests in flight
-- share a token.
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  pool = {}
  local n = tonumber(os.getenv("WRK_THREADS") or "2")
  local i = 0
  for token in string.gmatch(os.getenv("TOKENS"), "[^,]+") do
    if i % n == id then
      table.insert(pool, token)
    end
    i = i + 1
  end
end

function request()
  local token = table.remove(pool) or "crg_rt_pool_ran_dry"
  return wrk.format("POST", "/auth/refresh", {["Content-Type"] = "application/json"},
    '{"refresh_token": "' .. token .. '"}')
end

function response(status, headers, body)
  local token = string.match(body, '"refresh_token":"([^"]+)"')
  if token then
    table.insert(pool, token)
  end
end
