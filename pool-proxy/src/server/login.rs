//! Logging in to a server as a client: StartupMessage, authentication (SCRAM-SHA-256
//! without channel binding, MD5, cleartext, trust), then the server's ParameterStatus and
//! BackendKeyData messages up to its first ReadyForQuery.

use bytes::BytesMut;
use pool_tokio::postgres::RawSocket;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;

use super::connection::{BackendKey, CancelAddr, ServerConnection};
use super::error::ServerError;
use super::exchange::{refused, send, Reader};
use super::upstream::Upstream;
use crate::protocol::backend::{Authentication, ServerMessage, TransactionStatus};

/// Log in over `socket` as `upstream` says: a server idle and ready for its first query.
pub(crate) async fn login(
    upstream: &Upstream,
    socket: RawSocket,
) -> Result<ServerConnection, ServerError> {
    let cancel_addr = CancelAddr::of(&socket)?;
    let mut conn = ServerConnection::new(socket, cancel_addr);
    let mut buf = BytesMut::new();
    frontend::startup_message(upstream.startup_parameters(), &mut buf).map_err(|_| {
        ServerError::Config(
            "a startup parameter (user, database, options, application_name) contains a NUL byte"
                .into(),
        )
    })?;
    send(&mut conn, &buf).await?;
    let mut reader = Reader::new();
    authenticate(upstream, &mut conn, &mut reader).await?;
    loop {
        match reader.next(&mut conn).await? {
            ServerMessage::ParameterStatus { name, value } => conn.parameters.push((name, value)),
            ServerMessage::BackendKeyData {
                process_id,
                secret_key,
            } => {
                // The wire's 32 bits, as the signed integers CancelRequest carries.
                conn.key = BackendKey {
                    pid: i32::from_be_bytes(process_id.to_be_bytes()),
                    secret: i32::from_be_bytes(secret_key.to_be_bytes()),
                };
            }
            ServerMessage::NoticeResponse => {}
            ServerMessage::ReadyForQuery(TransactionStatus::Idle) => break,
            ServerMessage::ErrorResponse {
                severity,
                sqlstate,
                message,
            } => return Err(refused(severity, sqlstate, message)),
            other => {
                return Err(ServerError::unexpected(
                    "ParameterStatus, BackendKeyData or ReadyForQuery (idle)",
                    other,
                ))
            }
        }
    }
    reader.finish()?;
    Ok(conn)
}

/// Answer the server's Authentication requests until AuthenticationOk.
async fn authenticate(
    upstream: &Upstream,
    conn: &mut ServerConnection,
    reader: &mut Reader,
) -> Result<(), ServerError> {
    let user = upstream.user();
    let password = || {
        upstream.password().ok_or_else(|| {
            ServerError::Config(format!(
                "the server requires a password for user {user:?} and none is configured"
            ))
        })
    };
    let mut buf = BytesMut::new();
    match next_request(conn, reader).await? {
        Authentication::Ok => return Ok(()),
        Authentication::CleartextPassword => password_message(password()?, &mut buf)?,
        Authentication::Md5Password { salt } => {
            let hash = md5_hash(user.as_bytes(), password()?, salt);
            password_message(hash.as_bytes(), &mut buf)?;
        }
        Authentication::Sasl { mechanisms } => {
            scram(conn, reader, password()?, &mechanisms).await?;
        }
        Authentication::Other(code) => {
            return Err(ServerError::Config(format!(
                "the server asks for {} authentication (request code {code}), which the proxy \
                 does not support; use scram-sha-256, md5, password or trust for its connections",
                Authentication::method_name(code)
            )))
        }
        other @ (Authentication::SaslContinue(_) | Authentication::SaslFinal(_)) => {
            return Err(ServerError::unexpected("an authentication request", other))
        }
    }
    if !buf.is_empty() {
        send(conn, &buf).await?;
    }
    match next_request(conn, reader).await? {
        Authentication::Ok => Ok(()),
        other => Err(ServerError::unexpected("AuthenticationOk", other)),
    }
}

/// SCRAM-SHA-256, without channel binding (no TLS upstream): the client-first message,
/// the proof, and a check of the server's signature.
async fn scram(
    conn: &mut ServerConnection,
    reader: &mut Reader,
    password: &[u8],
    mechanisms: &[String],
) -> Result<(), ServerError> {
    if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
        return Err(ServerError::Config(format!(
            "the server offers SASL mechanisms {mechanisms:?}; the proxy speaks only \
             {SCRAM_SHA_256} without channel binding"
        )));
    }
    let mut scram = ScramSha256::new(password, ChannelBinding::unsupported());
    let mut buf = BytesMut::new();
    frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut buf)
        .map_err(|e| ServerError::Auth(format!("SCRAM client-first message: {e}")))?;
    send(conn, &buf).await?;
    let server_first = match next_request(conn, reader).await? {
        Authentication::SaslContinue(data) => data,
        other => return Err(ServerError::unexpected("AuthenticationSASLContinue", other)),
    };
    scram
        .update(&server_first)
        .map_err(|e| ServerError::Auth(format!("SCRAM server-first message: {e}")))?;
    buf.clear();
    frontend::sasl_response(scram.message(), &mut buf)
        .map_err(|e| ServerError::Auth(format!("SCRAM client-final message: {e}")))?;
    send(conn, &buf).await?;
    let server_final = match next_request(conn, reader).await? {
        Authentication::SaslFinal(data) => data,
        other => return Err(ServerError::unexpected("AuthenticationSASLFinal", other)),
    };
    scram
        .finish(&server_final)
        .map_err(|e| ServerError::Auth(format!("SCRAM server-final message: {e}")))
}

/// The next Authentication request; the server's ErrorResponse (a wrong password, an
/// unknown role or database) as its error.
async fn next_request(
    conn: &mut ServerConnection,
    reader: &mut Reader,
) -> Result<Authentication, ServerError> {
    match reader.next(conn).await? {
        ServerMessage::Authentication(request) => Ok(request),
        ServerMessage::ErrorResponse {
            severity,
            sqlstate,
            message,
        } => Err(refused(severity, sqlstate, message)),
        other => Err(ServerError::unexpected("an Authentication request", other)),
    }
}

fn password_message(password: &[u8], buf: &mut BytesMut) -> Result<(), ServerError> {
    frontend::password_message(password, buf)
        .map_err(|_| ServerError::Config("the password contains a NUL byte".into()))
}
