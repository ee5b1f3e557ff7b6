//! Who may call the REST endpoint (`rest.auth.*`).

/// Who may use the endpoint: with a token, requests that change the job
/// (POST, PATCH, DELETE) must carry `Authorization: Bearer <token>`, and
/// with `protect_reads` every request must. Without a token the endpoint
/// trusts whoever can reach it (bind it to loopback: `rest.address`).
#[derive(Clone, Default)]
pub struct RestAuth {
    /// `rest.auth.token`.
    pub token: Option<String>,
    /// `rest.auth.protect-reads`.
    pub protect_reads: bool,
}

impl std::fmt::Debug for RestAuth {
    // Never print the token itself (logs are read by more people than the
    // configuration file).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestAuth")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("protect_reads", &self.protect_reads)
            .finish()
    }
}
