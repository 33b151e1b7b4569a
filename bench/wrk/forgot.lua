-- POST /auth/password/forgot for the seeded accounts (KIND=known: user<i>@bench.example, i from
-- 1 to USERS) or for addresses with no account (KIND=unknown: nobody<i>@bench.example), in turn.
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  kind = os.getenv("KIND") or "known"
  users = tonumber(os.getenv("USERS") or "1000")
  counter = id * 7919
end

function request()
  counter = counter + 1
  local i = counter % users + 1
  local local_part = (kind == "known") and ("user" .. i) or ("nobody" .. i)
  local body = string.format('{"email": "%s@bench.example"}', local_part)
  return wrk.format("POST", "/auth/password/forgot", {["Content-Type"] = "application/json"}, body)
end
