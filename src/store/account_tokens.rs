//! SQL for `account_tokens` (password-reset and e-mail verification tokens) and the account
//! changes they make, each in one transaction with the mail it queues. (H-flows.)
