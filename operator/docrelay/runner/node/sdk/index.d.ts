// Types of @docrelay/sdk: what a docrelay Node.js integration imports (docs/runner.md).

export interface PlatformDocument {
  data: Record<string, unknown> | null;
  meta: Record<string, unknown> | null;
  error: unknown;
  warnings: unknown[] | null;
  [key: string]: unknown;
}

export interface ApiResponse {
  success: boolean;
  data: unknown;
  status_code: number;
  headers: Record<string, string>;
  /** A dry run: a writing method was not sent; `data` is `{dryRun: true, simulated: "..."}`. */
  dry_run?: boolean;
}

export type FileContent = string | Uint8Array | ArrayBuffer;
export type FileValue =
  | FileContent
  | [filename: string, content: FileContent, contentType?: string]
  | { filename?: string; content: FileContent; contentType?: string };

export interface ApiRequestOptions {
  /** Default "POST". */
  method?: string;
  /** Bytes are sent as they are, a string as text, anything else as JSON. */
  body?: unknown;
  headers?: Record<string, string | number>;
  params?: Record<string, unknown>;
  files?: Record<string, FileValue> | Array<[string, FileValue]>;
  /** Form fields. */
  data?: Record<string, unknown>;
}

export interface ActionAnswer {
  success: boolean;
  /** A dry run: the action was not run, `ret` is `{dryRun: true, simulated: "..."}`. */
  dry_run?: boolean;
  result: { ret: unknown; exports: Record<string, unknown>; os: unknown[] };
}

export function getDocument(identifier: string): Promise<PlatformDocument>;
export function getValidationResults(identifier: string): Promise<Record<string, unknown>[]>;
export function getDocumentPortalUrl(identifier: string): Promise<string | null>;
export function apiRequest(accountId: string, url: string, options?: ApiRequestOptions): Promise<ApiResponse>;
export function executeAction(
  accountId: string,
  toolName: string,
  toolParams?: Record<string, unknown>,
): Promise<ActionAnswer>;
export function uploadFile(
  accountId: string,
  content: FileContent,
  fileName: string,
  contentType: string,
): Promise<string>;

/** A helper call failed. `statusCode` is the broker's answer (null: no answer). */
export class SdkError extends Error {
  statusCode: number | null;
  retryable?: boolean;
}
/** No answer, or 429/5xx: retryable (a TransientError). */
export class BrokerUnavailable extends SdkError {
  retryable: true;
}
export class RateLimited extends BrokerUnavailable {
  retryAfter: number | null;
}
export class UpstreamTimeout extends BrokerUnavailable {}
export class Forbidden extends SdkError {
  retryable: false;
}
export class DocumentNotFound extends SdkError {
  retryable: false;
}
export class NotFound extends SdkError {
  retryable: false;
}
export class ActionFailed extends SdkError {
  retryable: false;
}
export class ApiRequestError extends SdkError {
  response: ApiResponse;
  retryable: boolean;
}
