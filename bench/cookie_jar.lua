-- wrk script: keep the session cookie the gateway sends back, as a browser does.
--
-- The gateway slides a session's idle timeout by re-sealing the cookie (cookie sessions) at
-- most once per refresh interval; a client that kept sending the first cookie would have it
-- re-sealed on every request once that interval has passed, which no browser does.
-- The request is formatted again only when the cookie changes.

local request_text = nil

function init(args)
   request_text = wrk.format()
end

function request()
   return request_text
end

function response(status, headers, body)
   local set_cookie = headers["Set-Cookie"] or headers["set-cookie"]
   if set_cookie ~= nil then
      local pair = set_cookie:match("^([^;]+)")
      if pair ~= nil and pair:find("=", 1, true) and not pair:match("=$") then
         wrk.headers["Cookie"] = pair
         request_text = wrk.format()
      end
   end
end
