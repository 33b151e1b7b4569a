-- POST /auth/signup with a new username and email on every request ($NONCE keeps runs apart).
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  prefix = string.format("s%s%d", os.getenv("NONCE"), id)
  counter = 0
end

function request()
  counter = counter + 1
  local name = prefix .. "_" .. counter
  local body = string.format(
    '{"email": "%s@bench.example", "username": "%s", "password": "correct horse battery staple"}',
    name, name)
  return wrk.format("POST", "/auth/signup", {["Content-Type"] = "application/json"}, body)
end
