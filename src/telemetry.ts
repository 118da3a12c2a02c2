// onnxruntime 1.30's Linux build records sessions in ~/.cache/Microsoft/DeveloperTools/.onnxruntime
// and leaves mat-debug-<pid>.log in the temporary folder unless ORT_DISABLE_TELEMETRY is set
// before its library loads. This module is imported first wherever onnxruntime is; a user's own
// setting of the variable is kept.
process.env.ORT_DISABLE_TELEMETRY ??= '1';
