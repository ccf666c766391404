local function lg_ping()
    return redis.call("PING")
end
