/** A small typed event emitter that runs in browsers and Node alike (``on``, ``off``,
 * ``once``, ``emit``). A listener that throws is reported to ``error`` listeners (or
 * the console), never to the code that emitted. */
export class Emitter {
    listeners = new Map();
    on(event, listener) {
        let set = this.listeners.get(event);
        if (set === undefined) {
            set = new Set();
            this.listeners.set(event, set);
        }
        set.add(listener);
        return this;
    }
    off(event, listener) {
        this.listeners.get(event)?.delete(listener);
        return this;
    }
    once(event, listener) {
        const wrapped = (arg) => {
            this.off(event, wrapped);
            listener(arg);
        };
        return this.on(event, wrapped);
    }
    listenerCount(event) {
        return this.listeners.get(event)?.size ?? 0;
    }
    emit(event, arg) {
        const set = this.listeners.get(event);
        if (set === undefined)
            return;
        for (const listener of [...set]) {
            try {
                listener(arg);
            }
            catch (error) {
                if (event !== "error" && this.listenerCount("error") > 0) {
                    this.emit("error", error);
                }
                else {
                    console.error("taskcast: a listener failed", error);
                }
            }
        }
    }
}
