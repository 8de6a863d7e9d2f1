-- Login sessions moved to the kv store kind (services/sessions.h), where every
-- process can verify tokens and revocation is one delete.
DROP TABLE sessions;
