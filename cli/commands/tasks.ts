import type { Task } from '../../scheduler/model/index.js';
import type { ApiClient } from '../client.js';
import { CliError } from '../errors.js';
import { printJson, progress, say, table } from '../output.js';

/** Runs a task on the app and, unless --no-wait, waits for it and prints its output. */
export async function runTask(client: ApiClient, name: string, command: string[], opts: { wait: boolean; json?: boolean; timeout?: number }): Promise<void> {
  if (command.length === 0) throw new CliError('give the task a command after --, e.g. grove run-task NAME -- migrate', 'BAD_ARGUMENT');
  let { task } = await client.post<{ task: Task }>(`/v1/apps/${encodeURIComponent(name)}/tasks`, { command });
  progress(`Task ${task.id} created on ${name}.`);
  if (opts.wait) {
    const deadline = Date.now() + (opts.timeout ?? 120) * 1000;
    while (task.state !== 'COMPLETED') {
      if (Date.now() > deadline) throw new CliError(`task ${task.id} is still ${task.state.toLowerCase()}: see grove tasks ${name}`, 'TIMEOUT');
      await new Promise((r) => setTimeout(r, 200));
      ({ task } = await client.get<{ task: Task }>(`/v1/tasks/${encodeURIComponent(task.id)}`));
    }
  }
  if (opts.json) return printJson(task);
  if (task.state !== 'COMPLETED') return say(task.id);
  if (task.failed) throw new CliError(`task ${task.id} failed: ${task.failureReason ?? 'unknown reason'}`, 'TASK_FAILED');
  if (task.result) say(task.result);
}

export async function listTasks(client: ApiClient, name: string | undefined, opts: { json?: boolean }): Promise<void> {
  const { tasks } = await client.get<{ tasks: Task[] }>('/v1/tasks', { app: name });
  if (opts.json) return printJson(tasks);
  say(
    table([
      ['task', 'state', 'command', 'outcome'],
      ...tasks.map((t) => [t.id, t.state.toLowerCase(), t.command.join(' '), t.state !== 'COMPLETED' ? '' : t.failed ? `failed: ${t.failureReason}` : 'ok']),
    ]),
  );
}
