-- wrk script used by bench/run.sh.
--
-- Always: counts response statuses across threads and prints them as
-- "status NNN: COUNT" lines at the end (parsed by bench/lib.py), so a run
-- that was answered 401/429/503 is never mistaken for a fast one.
-- With $BENCH_AUTH_FILE set (one Authorization value per line): each request
-- carries the next value, cycling, to $BENCH_PATH (default /small).
local threads = {}
local auths = {}
local i = 0
local path = os.getenv("BENCH_PATH") or "/small"

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
  local file = os.getenv("BENCH_AUTH_FILE")
  if file and #file > 0 then
    for line in io.lines(file) do
      if #line > 0 then
        table.insert(auths, line)
      end
    end
    i = math.random(#auths)
  end
end

if (os.getenv("BENCH_AUTH_FILE") or "") ~= "" then
  function request()
    i = i % #auths + 1
    return wrk.format("GET", path, { ["Authorization"] = auths[i] })
  end
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do
      total[k] = (total[k] or 0) + v
    end
  end
  for k, v in pairs(total) do
    io.write(string.format("status %d: %d\n", k, v))
  end
end
