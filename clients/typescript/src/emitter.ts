/** A small typed event emitter that runs in browsers and Node alike (``on``, ``off``,
 * ``once``, ``emit``). A listener that throws is reported to ``error`` listeners (or
 * the console), never to the code that emitted. */

type Listener<A> = (arg: A) => void;

export class Emitter<Events extends { [name: string]: unknown }> {
  private listeners = new Map<keyof Events, Set<Listener<never>>>();

  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    let set = this.listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as Listener<never>);
    return this;
  }

  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    this.listeners.get(event)?.delete(listener as Listener<never>);
    return this;
  }

  once<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    const wrapped = (arg: Events[K]): void => {
      this.off(event, wrapped);
      listener(arg);
    };
    return this.on(event, wrapped);
  }

  listenerCount<K extends keyof Events>(event: K): number {
    return this.listeners.get(event)?.size ?? 0;
  }

  protected emit<K extends keyof Events>(event: K, arg: Events[K]): void {
    const set = this.listeners.get(event);
    if (set === undefined) return;
    for (const listener of [...set]) {
      try {
        (listener as Listener<Events[K]>)(arg);
      } catch (error) {
        if (event !== "error" && this.listenerCount("error" as K) > 0) {
          this.emit("error" as K, error as Events[K]);
        } else {
          console.error("taskcast: a listener failed", error);
        }
      }
    }
  }
}
