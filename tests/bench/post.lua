-- Licensed under the Apache License, Version 2.0.
-- wrk script of the benchmark suite: every request POSTs the same body,
-- read once from the file named by BENCH_BODY, with the Content-Type in
-- BENCH_CONTENT_TYPE (default application/json), and an Authorization
-- header from BENCH_AUTHORIZATION when it is set.
local path = assert(os.getenv("BENCH_BODY"), "BENCH_BODY is not set")
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
    or "application/json"
local auth = os.getenv("BENCH_AUTHORIZATION")
if auth and auth ~= "" then
    wrk.headers["Authorization"] = auth
end
