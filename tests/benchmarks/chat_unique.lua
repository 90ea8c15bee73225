-- wrk script: chat completions whose prompt differs on every request (response-cache misses). NONCE (set by
-- harness.wrk for every run) keeps a later run from repeating an earlier run's prompts, which would be hits.
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("KEY") or "sk-bench-master")
request = function()
  counter = counter + 1
  local body = '{"model":"' .. (os.getenv("MODEL") or "bench-model") ..
    '","messages":[{"role":"user","content":"Say hello, request ' .. counter .. ' of thread ' .. tostring(wrk.thread) ..
    ' in run ' .. (os.getenv("NONCE") or "") .. '."}]}'
  return wrk.format(nil, nil, nil, body)
end
